"""segcore-plugin-frm: the feature refinement module of seed 003 with its VAN backbone, FPN decoder and loss."""
