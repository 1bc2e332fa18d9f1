package render

import (
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NodeIdentityName names the admission policy that bounds node agents and gateways to their
// own node's objects, and its binding.
const NodeIdentityName = "weft-node-identity"

// NodeNameClaim is the user-info extra that a token bound to a pod carries: the pod's node.
const NodeNameClaim = "authentication.kubernetes.io/node-name"

// The operator installs the policy (OLM bundles cannot carry one), so it holds:
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=update;patch;delete,resourceNames=weft-node-identity

// NodeIdentity renders a ValidatingAdmissionPolicy and its binding that let the node agents'
// and gateways' service accounts write only the objects of the node their token is bound to
// (the node-name claim of a pod-bound token, Kubernetes 1.30 and later): that node's
// FabricNode status, FabricGateway, BGPNode and gateway Lease. RBAC alone cannot say "your
// own node"; without this, one compromised node could rewrite every other node's reports.
// A token without the claim (not bound to a pod on a node) may write none of them.
func NodeIdentity(namespace string) []client.Object {
	labels := workloadLabels(NodeIdentityName)
	user := func(name string) string { return fmt.Sprintf("'system:serviceaccount:%s:%s'", namespace, name) }
	policy := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: NodeIdentityName, Labels: labels},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{
				{RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
					Rule: admissionv1.Rule{APIGroups: []string{"fabric.weft.dev"}, APIVersions: []string{"*"},
						Resources: []string{"fabricnodes", "fabricnodes/status", "fabricgateways", "fabricgateways/status", "bgpnodes", "bgpnodes/status"}},
				}},
				{RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
					Rule:       admissionv1.Rule{APIGroups: []string{"coordination.k8s.io"}, APIVersions: []string{"*"}, Resources: []string{"leases"}},
				}},
			}},
			MatchConditions: []admissionv1.MatchCondition{{
				Name:       "weft-node-workloads",
				Expression: fmt.Sprintf("request.userInfo.username in [%s, %s]", user(AgentName), user(GatewayName)),
			}},
			Variables: []admissionv1.Variable{{
				Name: "node",
				Expression: fmt.Sprintf("has(request.userInfo.extra) && '%s' in request.userInfo.extra && size(request.userInfo.extra['%s']) > 0 ? request.userInfo.extra['%s'][0] : ''",
					NodeNameClaim, NodeNameClaim, NodeNameClaim),
			}},
			Validations: []admissionv1.Validation{
				{
					Expression: "variables.node != ''",
					Message:    "weft's node agents and gateways must use a token bound to their pod: it names their node (" + NodeNameClaim + ")",
					Reason:     ptr.To(metav1.StatusReasonForbidden),
				},
				{
					Expression:        "request.resource.group != 'coordination.k8s.io' || request.name == 'weft-gateway-' + variables.node",
					MessageExpression: "'the gateway on node ' + variables.node + ' may renew only its own Lease (weft-gateway-' + variables.node + '), not ' + request.name",
					Reason:            ptr.To(metav1.StatusReasonForbidden),
				},
				{
					Expression:        "request.resource.group == 'coordination.k8s.io' || request.name == variables.node",
					MessageExpression: "'the weft workload on node ' + variables.node + ' may change only its own node\\'s ' + request.resource.resource + ', not ' + request.name + '\\'s'",
					Reason:            ptr.To(metav1.StatusReasonForbidden),
				},
			},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: NodeIdentityName, Labels: labels},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        NodeIdentityName,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
	return []client.Object{policy, binding}
}
