"""warelay.agents."""
