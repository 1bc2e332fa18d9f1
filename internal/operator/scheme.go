package operator

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	mcsv1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	aboutv1 "github.com/weft-net/weft/api/about/v1beta1"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// NewScheme returns the scheme with every type the operator reads or writes.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(fabricv1.AddToScheme(s))
	utilruntime.Must(mcsv1.AddToScheme(s))
	utilruntime.Must(aboutv1.AddToScheme(s))
	return s
}
