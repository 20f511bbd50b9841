// One element per output token, labelled by the speculation trace:
//   data-draft="accepted"  a draft token the target kept
//   data-draft="bonus"     the token the target added after the accepted drafts
//   data-draft="target"    plain decoding (a step that drafted nothing)
//   data-draft="rejected"  a draft token the target refused: ghosted after its step, not answer text
//
// The answer text is what the API sends in delta.content; the trace only labels it. Token texts
// from the trace are matched against the content as it arrives, because the two can differ:
// text held back for a stop string, an EOS bonus that is never shown, a multi-byte character
// split over tokens. Unlabelled content is shown as "target".

export class TokenView {
  constructor(container) {
    this.el = container;
    this.pending = [];        // {kind, text} from the trace, not yet matched against content
  }

  addSteps(steps) {
    for (const s of steps) {
      const drafted = s.drafted || [];
      if (drafted.length === 0) {
        this.pending.push({ kind: "target", text: s.bonus });
        continue;
      }
      for (const t of drafted.slice(0, s.accepted)) this.pending.push({ kind: "accepted", text: t });
      this.pending.push({ kind: "bonus", text: s.bonus });
      for (const t of drafted.slice(s.accepted)) this.pending.push({ kind: "rejected", text: t });
    }
  }

  addText(delta) {
    for (;;) {
      while (this.pending.length && this.pending[0].kind === "rejected") {
        this.emit("rejected", this.pending.shift().text);   // right after the step's bonus
      }
      if (!delta) return;
      const head = this.pending[0];
      if (!head) {
        this.emit("target", delta);
        return;
      }
      if (head.text && delta.startsWith(head.text)) {        // the usual case: whole token
        this.emit(head.kind, head.text);
        delta = delta.slice(head.text.length);
        this.pending.shift();
      } else if (head.text.startsWith(delta)) {               // the token continues in a later chunk
        this.emit(head.kind, delta);
        head.text = head.text.slice(delta.length);
        return;
      } else {                                                // texts disagree (e.g. split UTF-8)
        this.emit(head.kind, delta);
        this.pending.shift();
        while (this.pending.length && this.pending[0].kind !== "rejected" &&
               this.pending[0].text.includes("\uFFFD")) this.pending.shift();
        return;
      }
    }
  }

  finish() {
    // leftovers never reached the content (EOS bonus, max_tokens cut): keep only their rejects
    for (const p of this.pending) if (p.kind === "rejected") this.emit("rejected", p.text);
    this.pending = [];
  }

  emit(kind, text) {
    const span = document.createElement("span");
    span.className = "tok";
    span.dataset.draft = kind;
    span.textContent = text;
    this.el.append(span);
  }

  text() {
    let out = "";
    for (const s of this.el.querySelectorAll(".tok:not([data-draft=rejected])")) out += s.textContent;
    return out;
  }
}
