"""What runs the generator: the engine contract and registry, torch, OpenVINO."""
