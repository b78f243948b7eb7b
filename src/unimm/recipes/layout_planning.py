"""Plan, then draw (train.t2i_plan, edit_plan): a model that writes the layout of each image in
words ("a red circle at the left and a blue square at the right") before it draws it.

The chameleon recipe mixes this in; its generate_image_codes calls with_layouts first, so every
path that draws (generate, GenEval, the server, chat) plans the way its training samples read.
"""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral

from unimm.data.sample import Image, Segment, Text
from unimm.paradigms.rng import Seed, make_rng
from unimm.recipes.base import SamplingConfig

# The longest layout a model that plans may write before an image: the world's four-object
# layouts take about 30 tokens.
LAYOUT_TOKENS = 96


class LayoutPlanning:
    """Layout writing for a next-token recipe with a text tokenizer (self.text_tok), a config
    (self.parts.config), image_tokens, _prompt_ids and generate(..., "text")."""

    @property
    def plans(self) -> bool:
        """Whether this model writes a layout before each image it draws from a text prompt
        alone (train.t2i_plan)."""
        return self.parts.config.train.t2i_plan

    def plans_for(self, prompt: list[Segment]) -> bool:
        """Whether the model writes a layout before the image this prompt asks for: a prompt
        with images asks for an edit (train.edit_plan), one without for a new image
        (train.t2i_plan); a prompt that ends with a reply already has its layout."""
        if isinstance(prompt[-1], Text) and prompt[-1].role == "assistant":
            return False
        if any(isinstance(s, Image) for s in prompt):
            return self.parts.config.train.edit_plan
        return self.plans

    def with_layouts(
        self, prompts: list[list[Segment]], sampling: SamplingConfig, seed: Seed
    ) -> list[list[Segment]]:
        """Each prompt the model plans for (plans_for) followed by the layout it writes for it
        ("a red circle at the top left and ..."), as an assistant reply, the way its training
        samples read; the other prompts (among them those that end with a layout the user
        wrote) are left as they are."""
        todo = [i for i, p in enumerate(prompts) if self.plans_for(p)]
        if not todo:
            return prompts
        make_rng(seed, len(prompts))  # a bad seed fails here, as it would for the image
        own = seed if isinstance(seed, Integral) else [seed[i] for i in todo]
        asks = [prompts[i] for i in todo]
        # the layout may take what the image leaves: <assistant> and <eos> around it, <boi>
        longest = max(len(self._prompt_ids(p, "text")) for p in asks)
        room = self.parts.config.model.max_seq_len - longest - 2 - self.image_tokens
        if room < 1:
            raise ValueError(
                f"prompt too long: {longest} tokens leave no room for a layout and the image "
                f"(the model takes {self.parts.config.model.max_seq_len})"
            )
        limit = min(max(sampling.max_new_tokens, LAYOUT_TOKENS), room)
        text = replace(sampling, max_new_tokens=limit)
        if sampling.layout_temperature is not None:
            text = replace(text, temperature=sampling.layout_temperature)
        layouts = self.generate(asks, "text", text, own)
        out = list(prompts)
        for i, layout in zip(todo, layouts, strict=True):
            out[i] = [*prompts[i], Text(self.fit_text(layout.text, limit), role="assistant")]
        return out

    def fit_text(self, text: str, limit: int) -> str:
        """text cut to re-encode in at most `limit` tokens: the prompt lays a layout out from
        its text, and an undertrained model's bytes need not decode and encode back alike."""
        ids = self.text_tok.encode(text)[:limit]
        while len(self.text_tok.encode(text := self.text_tok.decode(ids))) > limit:
            ids = ids[:-1]
        return text
