"""Builders: turn a knowledge base and questions into the inputs of every later stage.

``sources`` reads knowledge bases and question sets in their published formats into
:class:`halluguard.kb.Passage` and :class:`halluguard.kb.Question` records.
"""
