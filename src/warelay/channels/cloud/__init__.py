"""warelay.channels.cloud."""
