"""Editing with a trained model: directions in W (directions.py, from labels, SeFa or the
authors' files; the labelled codes they are fitted on in labelled.py), edit strips along them
(strips.py) and projection of real images by optimisation (projection.py); the `alae`
commands in cli.py."""
