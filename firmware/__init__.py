"""Mini-PBX appliance firmware."""
