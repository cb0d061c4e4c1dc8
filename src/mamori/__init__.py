"""Mamori: ISP defence against botnets, DDoS and abuse that respects the secrecy of communications."""

__version__ = "0.1.0"

__all__ = ["__version__"]
