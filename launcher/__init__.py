"""launcher: renders, submits and follows tvq runs as Kubernetes JobSets (never imports JAX)."""
