"""warelay: a self-hosted gateway that puts AI agents on WhatsApp Business numbers."""

__version__ = "0.1.0"
