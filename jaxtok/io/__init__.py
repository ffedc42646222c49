"""File formats with no model knowledge (docs/design.md §1): safetensors, torch zip pickles and the
jaxtok checkpoint-directory layout. Nothing here imports the rest of jaxtok."""
