"""Rasters: GeoTIFF/PNG reading with their checks (paper Sections 8.1-8.3), windows and tiles of large scenes."""
