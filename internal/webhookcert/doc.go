// Package webhookcert gives the operator's admission webhooks a serving certificate without
// cert-manager: a CA and a leaf certificate kept in one Secret (shared by all replicas),
// written to the webhook server's certificate directory, and the CA injected into the
// webhook configurations' caBundle. A Rotator renews the leaf before it expires and puts
// the caBundle back if something (a GitOps sync, say) cleared it.
package webhookcert
