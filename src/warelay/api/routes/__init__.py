"""HTTP routes: webhooks, warelay's own API, the seed APIs, health."""
