package policy

import "github.com/seed-3c836eab/roster/pkg/wire"

// GetRequest is the (empty) body of wire.SubjectPolicyGet.
type GetRequest struct{}

// SetRequest is the body of wire.SubjectPolicySet.
type SetRequest struct {
	Policy *Policy `json:"policy"`
	// Revision, if not zero, makes the change conditional: it fails with conflict
	// when the stored policy is no longer at this revision.
	Revision uint64 `json:"revision,omitempty"`
}

// Validate refuses a request without a policy or with an invalid one (bad_request).
func (r *SetRequest) Validate() error {
	if r.Policy == nil {
		return wire.Errorf(wire.CodeBadRequest, "policy is required")
	}
	if err := r.Policy.Validate(); err != nil {
		return wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	return nil
}

// Response is the reply of both policy endpoints: the stored policy and its KV
// revision, which a later SetRequest may name.
type Response struct {
	Policy   *Policy `json:"policy"`
	Revision uint64  `json:"revision"`
}
