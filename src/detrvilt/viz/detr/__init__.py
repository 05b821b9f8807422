"""Pictures of a DETR: detections, encoder and decoder attention (`pictures.py`), object-query boxes
(`query_boxes.py`), and the demo's set of pictures in one call (`demo.py`)."""
