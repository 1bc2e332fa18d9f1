-- Argo CD health of weft's kinds (fabric.weft.dev ClusterNetwork, ClusterPeer, Tier,
-- FabricPolicy): the kstatus rules the operator follows, so Argo CD and Flux agree.
--   no status or an old observedGeneration -> Progressing (the operator has not seen it yet)
--   Stalled=True                           -> Degraded (needs the user; the reason says why)
--   Reconciling=True                       -> Progressing
--   Degraded=True (Ready=True)             -> Degraded (served from its last known state:
--                                             traffic flows; the message says since when)
--   Ready=True                             -> Healthy
--   Ready=False                            -> Degraded
local hs = {status = "Progressing", message = "Waiting for the weft operator to observe this object"}
if obj.status == nil or obj.status.observedGeneration == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the weft operator to observe generation " .. obj.metadata.generation
  return hs
end
local found = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    found[c.type] = c
  end
end
local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(found.Stalled)
elseif found.Reconciling ~= nil and found.Reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(found.Reconciling)
elseif found.Degraded ~= nil and found.Degraded.status == "True" and found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(found.Ready)
elseif found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(found.Ready)
elseif found.Ready ~= nil and found.Ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(found.Ready)
end
return hs
