"""The adapter family: bottleneck adapters (ST-A, MT-A), AdapterFusion, routing, their artifacts, importers and training."""
