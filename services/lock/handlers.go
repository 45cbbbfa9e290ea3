package lock

// register adds the service's endpoints. Each handler is a thin adapter: the endpoint
// package decodes and validates the request, and the handler calls a domain method.
func (s *Service) register() error {
	return nil
}
