"""Operator commands: functions the command line (and later the HTTP API) call, carried
out under the pipeline's lease by the running service or, when none runs, by the caller."""
