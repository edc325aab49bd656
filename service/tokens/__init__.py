"""Tokens: a compact JWS in, verified claims out."""
