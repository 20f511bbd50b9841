// Live numbers for one answer: tok/s, TTFT, tau, drafted / accepted totals, and one bar per
// verify step (accepted / drafted). The server's final `timings` replace the live estimates.

const MAX_BARS = 120;

export class LiveStats {
  constructor(doc) {
    this.$ = (id) => doc.getElementById(id);
    this.chart = this.$("accept-chart");
  }

  start() {
    this.t0 = performance.now();
    this.tFirst = null;
    this.steps = this.tokens = this.drafted = this.accepted = 0;
    this.chart.replaceChildren();
    for (const id of ["stat-tps", "stat-ttft", "stat-tau", "stat-rate"]) this.$(id).textContent = "–";
    this.show();
  }

  firstToken() {
    if (this.tFirst !== null) return;
    this.tFirst = performance.now();
    this.$("stat-ttft").textContent = `${Math.round(this.tFirst - this.t0)} ms`;
  }

  addSteps(steps) {
    for (const s of steps) {
      const d = (s.drafted || []).length;
      this.steps += 1;
      this.tokens += s.accepted + 1;
      this.drafted += d;
      this.accepted += s.accepted;
      this.bar(s.accepted, d);
    }
    this.show();
  }

  // without a trace (tokens counted from content elements)
  countTokens(n) {
    if (this.steps === 0) this.tokens = n;
    this.show();
  }

  bar(accepted, drafted) {
    const b = document.createElement("div");
    b.className = "bar";
    b.dataset.accepted = accepted;
    b.dataset.drafted = drafted;
    b.title = drafted ? `${accepted}/${drafted} accepted` : "no draft";
    b.style.height = drafted ? `${Math.max(4, (100 * accepted) / drafted)}%` : "2px";
    if (!drafted) b.classList.add("none");
    this.chart.append(b);
    while (this.chart.children.length > MAX_BARS) this.chart.firstChild.remove();
  }

  show() {
    this.$("stat-drafted").textContent = String(this.drafted);
    this.$("stat-accepted").textContent = String(this.accepted);
    if (this.drafted) this.$("stat-rate").textContent = `${Math.round((100 * this.accepted) / this.drafted)}%`;
    if (this.steps) this.$("stat-tau").textContent = (this.tokens / this.steps).toFixed(2);
    if (this.tFirst !== null && this.tokens > 1) {
      const secs = (performance.now() - this.tFirst) / 1000;
      if (secs > 0) this.$("stat-tps").textContent = ((this.tokens - 1) / secs).toFixed(1);
    }
  }

  final(timings) {
    if (!timings) return;
    this.drafted = timings.draft_n;
    this.accepted = timings.draft_n_accepted;
    this.show();
    if (timings.predicted_per_second) this.$("stat-tps").textContent = timings.predicted_per_second.toFixed(1);
  }
}
