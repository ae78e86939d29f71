"""Authenticators for afhub: local accounts for development, CILogon for production."""
