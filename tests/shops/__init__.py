"""Real open-source shops the tests install from the package index and start."""
