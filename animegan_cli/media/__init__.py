"""Files in and out: finding inputs, decoding images and clips, output formats and names."""
