"""Orchestration: the CLI commands, the live run, report and the agent.  Nothing in the
stages imports from here."""
