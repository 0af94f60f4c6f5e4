"""Shared settings of the training tests."""

# A tiny CLIP for trainer tests: the real 49,408-token vocabulary is kept (the trainer tokenizes
# real captions), everything else is small.
TINY_CONFIG = {
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "projection_dim": 16,
}
