-- Argo CD health of a ServiceExport (multicluster.x-k8s.io), from the conditions the MCS API
-- defines and weft sets:
--   Valid=False   -> Degraded (no such Service, or it cannot be exported)
--   Conflict=True -> Degraded (exported, but clusters disagree; the message says on what)
--   Ready=True    -> Healthy (every cluster of the set can import it)
--   otherwise     -> Progressing
local hs = {status = "Progressing", message = "Waiting for the weft operator to export the Service"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local found = {}
for _, c in ipairs(obj.status.conditions) do
  found[c.type] = c
end
local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end
if found.Valid ~= nil and found.Valid.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(found.Valid)
elseif found.Conflict ~= nil and found.Conflict.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(found.Conflict)
elseif found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(found.Ready)
elseif found.Ready ~= nil then
  hs.message = describe(found.Ready)
end
return hs
