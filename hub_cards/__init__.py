"""Model-card templates (`detr.md`, `vilt.md`), installed as the package data `detrvilt.hub_cards` and read by
`detrvilt.hub.render_model_card`."""
