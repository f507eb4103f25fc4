"""The model-card templates of `vitzoo push`, one per kind of model (see `vitzoo.publish.card.TEMPLATES`).

A folder at the top of the repository, installed as the package `vitzoo.model_cards` so that
`importlib.resources` finds the templates in an editable and in a regular install alike.
"""
