"""Scoring saliency maps (Pointing Game) and the study's statistics."""
