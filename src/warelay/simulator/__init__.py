"""warelay.simulator."""
