"""Azure adapters: the ARM pipeline, security connectors and health reports."""
