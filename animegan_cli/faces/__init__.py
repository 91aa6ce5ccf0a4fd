"""--faces: detection, the face stage of the loop, blending a styled face back."""
