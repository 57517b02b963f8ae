"""The service's HTTP server: health probes, Prometheus metrics and the admin API."""
