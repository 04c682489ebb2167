"""Stage 2: dataset distances (OTDD, MMD) and the source data they align to."""
