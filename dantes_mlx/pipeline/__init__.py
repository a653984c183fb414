"""The whole project: init writes dantes.yaml, run and demo chain every stage."""
