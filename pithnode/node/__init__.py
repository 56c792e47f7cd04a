"""The long-lived node: service state, HTTP server, peer protocol, polling, attestations, runner."""
