"""French dialogue: direct speech, incises, speakers, first-person narrators, the lexicon, one text normaliser."""
