"""AnimeGANv2's own TensorFlow 1 checkpoints: what each style is, where to get its files,
its licence and the name it is imported under (torch-free: ``weights list`` shows them)."""

from __future__ import annotations

from dataclasses import dataclass

ORIGINAL_REPOSITORY = "https://github.com/TachibanaYoshino/AnimeGANv2"
LICENCE = ("non-commercial use only (AnimeGANv2's licence: free for academic research, "
           "teaching and scientific publications; ask its author for commercial use)")


@dataclass(frozen=True)
class Original:
    """One style published as a TensorFlow checkpoint in the original repository."""

    name: str  # the name ``weights import`` stores it under, and ``--style`` takes
    word: str  # how its folder and files are spelled there (generator_<word>_weight)
    checkpoint: str  # the prefix its folder's ``checkpoint`` file names
    trained_on: str

    @property
    def folder(self) -> str:
        return f"checkpoint/generator_{self.word}_weight"

    @property
    def url(self) -> str:
        return f"{ORIGINAL_REPOSITORY}/tree/master/{self.folder}"


ORIGINALS = {
    original.name: original
    for original in (
        Original("hayao", "Hayao", "Hayao-99.ckpt",
                 "landscapes, Miyazaki Hayao style (The Wind Rises)"),
        Original("shinkai", "Shinkai", "Shinkai-53.ckpt",
                 "landscapes, Makoto Shinkai style (Your Name, Weathering with You)"),
        # "paprika" is the published PyTorch conversion (checked by its blob id).
        Original("paprika_tf", "Paprika", "Paprika-54.ckpt",
                 "landscapes, Kon Satoshi's Paprika style (the TensorFlow original)"),
    )
}
