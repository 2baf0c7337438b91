"""Webhook delivery: outbound HTTP to receivers that job submitters name."""
