"""ID-document readers: the pure MRZ codec (:mod:`.mrz`) and the readers (:mod:`.reader`)."""
