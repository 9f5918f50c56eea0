"""The run: a spec's units planned, run on Ray, recorded in the ledger and reduced (the orchestrator)."""
