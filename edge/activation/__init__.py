"""Activation beyond the page: segment changes, scenarios, the outbox and its delivery."""
