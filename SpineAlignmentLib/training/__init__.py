"""Training of landmark networks: data, label hygiene, keypoint transforms, losses, trainer."""
