// The review queue of the merchandisers' UI: a paged table of a batch's rows, driven by the keyboard.
// Loaded in the page's <head> (app/ui/review.py); reads and writes the batch through /ui/review/... (app/ui/queue_routes.py).
// A key changes the row on screen at once and is saved in order behind it; the status line says when it is saved.
(() => {
  document.documentElement.lang = "ru";
  new MutationObserver(() => { if (document.documentElement.lang !== "ru") document.documentElement.lang = "ru"; })
    .observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });

  const FILTERS = [["review", "Требуют проверки"], ["not_product", "Не товар"], ["corrected", "Исправленные"],
                   ["failed", "Ошибки"], ["all", "Все"]];
  const SOURCES = { model: "не проверено", confirmed: "✓ подтверждено", corrected: "✎ исправлено",
                    not_a_product: "не товар", failed: "ошибка" };
  const S = { batch: null, info: null, filter: "review", offset: 0, page: 50, rows: [], total: 0, cur: 0,
              classes: [], undo: [], chain: Promise.resolve(), latency: [], saved: [], poll: null, loads: 0,
              outbox: [], inflight: false, undos: 0 };
  window.fcState = S;
  const api = () => location.pathname.replace(/\/+$/, "") + "/review";
  const esc = (t) => String(t ?? "").replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
  const $ = (sel) => document.querySelector(sel);
  const name = () => localStorage.getItem("fc-reviewer") || "";
  const when = (t) => (t ? new Date(t * 1000).toLocaleString("ru-RU", { dateStyle: "short", timeStyle: "short" }) : "");
  const ru = (i) => (i === null || i === undefined || !S.classes[i] ? "" : S.classes[i].ru);

  async function call(path, body) {
    const r = await fetch(api() + path, body === undefined ? {} :
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.detail || r.statusText);
    return data;
  }

  function mount(root) {
    root.innerHTML = `
      <div class="fc-top">
        <label>Ваше имя: <input id="fc-name" autocomplete="name" placeholder="чтобы было видно, кто проверил"></label>
        <details id="fc-list"><summary>Партии</summary><div id="fc-batches">—</div></details>
      </div>
      <div id="fc-head" hidden>
        <div id="fc-summary" class="fc-summary"></div>
        <div id="fc-progress" hidden><progress max="1" value="0"></progress> <span></span></div>
        <div class="fc-bar">
          <span id="fc-filters">${FILTERS.map(([f, t]) => `<button data-f="${f}">${t}</button>`).join("")}</span>
          <button id="fc-accept" title="клавиша A">Принять остальные</button>
          <a id="fc-csv" download>Скачать CSV</a> <a id="fc-xlsx" download>Скачать Excel</a>
        </div>
        <div id="fc-msg" class="fc-msg" role="status" aria-live="polite"></div>
      </div>
      <table class="fc-table" hidden><thead><tr><th>№</th><th>Фото</th><th>Файл</th><th>Ответ модели</th>
        <th>Итоговая категория</th><th>Кто и когда</th></tr></thead><tbody id="fc-rows"></tbody></table>
      <div id="fc-pager" class="fc-pager" hidden><button data-p="-1">← Назад</button> <span></span>
        <button data-p="1">Далее →</button></div>
      <div id="fc-keys" class="fc-keys" hidden></div>`;
    const input = $("#fc-name");
    input.value = name();
    input.addEventListener("change", () => localStorage.setItem("fc-reviewer", input.value.trim()));
    $("#fc-filters").addEventListener("click", (e) => e.target.dataset.f && setFilter(e.target.dataset.f));
    $("#fc-accept").addEventListener("click", () => acceptRest());
    $("#fc-pager").addEventListener("click", (e) => e.target.dataset.p && turn(+e.target.dataset.p, 0));
    $("#fc-rows").addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-k]");
      if (tr) { S.cur = +tr.dataset.k; paint(); }
    });
    $("#fc-list").addEventListener("toggle", (e) => e.target.open && listBatches());
    const id = new URLSearchParams(location.search).get("batch");
    if (id) open(id);
    else { $("#fc-list").open = true; }
  }

  async function listBatches() {
    const { batches } = await call("/batches");
    $("#fc-batches").innerHTML = batches.length ? "<ul>" + batches.map((b) =>
      `<li><a href="?batch=${esc(b.id)}" data-b="${esc(b.id)}">${when(b.created_at)} — ${b.n_files} фото` +
      `${b.reviewer ? ", " + esc(b.reviewer) : ""}; осталось проверить: ${b.pending}</a></li>`).join("") + "</ul>"
      : "Партий пока нет.";
    $("#fc-batches").onclick = (e) => { const a = e.target.closest("a[data-b]"); if (a) { e.preventDefault(); open(a.dataset.b); } };
  }

  async function open(id) {
    Object.assign(S, { batch: id, offset: 0, cur: 0, undo: [] });
    history.replaceState(null, "", "?batch=" + encodeURIComponent(id));
    $("#fc-csv").href = `${api()}/batches/${id}/export?format=csv`;
    $("#fc-xlsx").href = `${api()}/batches/${id}/export?format=xlsx`;
    $("#fc-list").open = false;
    await load();
    // the queue fills the screen, the title and the upload box scroll away
    $("#fc-head").scrollIntoView({ block: "start" });
  }

  async function load() {
    await idle();  // the rows on screen are replaced: not before the saves of their changes are answered
    let d;
    try {
      d = await call(`/batches/${S.batch}/rows?filter=${S.filter}&offset=${S.offset}&limit=${S.page}`);
    } catch (e) {
      $("#fc-head").hidden = false;
      $("#fc-summary").textContent = "Партия не найдена: " + e.message;
      return;
    }
    Object.assign(S, { rows: d.rows, total: d.total, classes: d.classes, info: d.batch });
    S.cur = Math.min(S.cur, Math.max(0, S.rows.length - 1));
    for (const el of ["#fc-head", ".fc-table", "#fc-pager", "#fc-keys"]) $(el).hidden = false;
    $("#fc-keys").innerHTML = "Клавиши: " + S.classes.map((c, i) => `<kbd>${(i + 1) % 10}</kbd> ${esc(c.ru)}`).join(", ") +
      "; <kbd>Enter</kbd> ответ модели верен; <kbd>N</kbd> не товар; <kbd>J</kbd>/<kbd>↓</kbd> и <kbd>K</kbd>/<kbd>↑</kbd> " +
      "следующее и предыдущее фото; <kbd>U</kbd> отменить; <kbd>A</kbd> принять остальные; <kbd>F</kbd> другой фильтр; " +
      "<kbd>E</kbd> скачать CSV.";
    summary();
    render();
    S.loads += 1;
    const processing = S.info.status === "processing";
    clearTimeout(S.poll);
    if (processing) S.poll = setTimeout(() => S.chain.then(load), 500);
  }

  function summary() {
    const b = S.info, c = b.counts, a = b.audit;
    const audit = a.rows ? `Выборочная проверка уверенных ответов: ${a.rows} фото, проверено ${a.reviewed}` +
      (a.reviewed ? `, ошибок ${a.errors} (${Math.round(a.error_rate * 100)}%)` : "") + "." : "";
    $("#fc-summary").innerHTML = `<b>Партия от ${when(b.created_at)}</b>${b.reviewer ? " (" + esc(b.reviewer) + ")" : ""}: ` +
      `${b.n_files} фото. Осталось проверить: <b id="fc-pending">${b.pending}</b>. Подтверждено ${c.confirmed}, ` +
      `исправлено ${c.corrected}, не товар ${c.not_a_product}, ошибок чтения ${c.failed}. ${audit}` +
      (b.status === "failed" && b.error ? ` Обработка прервана: ${esc(b.error)}.` : "");
    const p = $("#fc-progress");
    p.hidden = b.status !== "processing";
    p.querySelector("progress").max = b.n_files;
    p.querySelector("progress").value = b.done;
    p.querySelector("span").textContent = `Обработано ${b.done} из ${b.n_files}…`;
    for (const btn of document.querySelectorAll("#fc-filters button")) btn.classList.toggle("fc-on", btn.dataset.f === S.filter);
    const last = Math.min(S.offset + S.page, S.total);
    $("#fc-pager span").textContent = S.total ? `${S.offset + 1}–${last} из ${S.total}` : "";
  }

  function cells(r) {
    const pic = r.source === "failed" ? `<span class="fc-nopic" aria-label="нет фото">—</span>` :
      `<img src="${api()}/batches/${S.batch}/rows/${r.idx}/thumb" alt="" width="40" height="40" loading="lazy" onerror="this.replaceWith('—')">`;
    const flags = [r.needs_review ? `<span class="fc-flag">⚠ проверить</span>` : "",
                   r.audit ? `<span class="fc-flag fc-audit">выборочная проверка</span>` : "",
                   r.is_product === 0 ? `<span class="fc-flag">похоже, не товар</span>` : ""].join(" ");
    const model = r.source === "failed" ? `<span class="fc-err">${esc(r.error_ru || r.error)}</span>` :
      `${esc(ru(r.predicted_index))} <small>уверенность ${Math.floor(r.confidence * 100)}%</small> ${flags}`;
    return `<td>${r.idx + 1}</td><td>${pic}</td><td class="fc-file">${esc(r.filename)}</td><td>${model}</td>` +
      `<td class="fc-final fc-${r.source}">${finalCell(r)}</td><td>${whoCell(r)}</td>`;
  }

  function finalCell(r) {
    const fin = r.source === "failed" ? "—" : r.source === "not_a_product" ? "не товар" : esc(ru(r.final_index));
    const state = r._saving ? " <small>сохраняется…</small>" : r._conflict ? " <small class='fc-err'>конфликт</small>" : "";
    return `<b>${fin}</b> <small>${SOURCES[r.source]}</small>${state}`;
  }

  function whoCell(r) {
    return `<small>${r.source !== "model" && r.source !== "failed" ? esc(r.reviewer) + " " + when(r.updated_at) : ""}</small>`;
  }

  function render() {
    const body = $("#fc-rows");
    body.innerHTML = S.rows.length ? S.rows.map((r, k) => `<tr data-k="${k}">${cells(r)}</tr>`).join("") :
      `<tr><td colspan="6">${S.info.status === "processing" ? "Фото обрабатываются…" :
        "Здесь ничего нет. Выберите другой фильтр (клавиша F)."}</td></tr>`;
    paint();
  }

  function paint() {
    for (const tr of document.querySelectorAll("#fc-rows tr.fc-cur")) tr.classList.remove("fc-cur");
    const tr = document.querySelector(`#fc-rows tr[data-k="${S.cur}"]`);
    if (tr) { tr.classList.add("fc-cur"); tr.scrollIntoView({ block: "nearest" }); }
  }

  // A changed row: only its last two cells (the photo stays, not decoded and laid out again at each key).
  function redraw(k) {
    const tr = document.querySelector(`#fc-rows tr[data-k="${k}"]`);
    if (!tr || tr.cells.length < 6) return;
    const r = S.rows[k];
    tr.cells[4].className = `fc-final fc-${r.source}`;
    tr.cells[4].innerHTML = finalCell(r);
    tr.cells[5].innerHTML = whoCell(r);
  }

  function say(text) { $("#fc-msg").textContent = text; }

  function setFilter(f) { Object.assign(S, { filter: f, offset: 0, cur: 0 }); S.chain = S.chain.then(load); }

  function turn(dir, cur) {
    const offset = S.offset + dir * S.page;
    if (offset < 0 || offset >= S.total) return false;
    Object.assign(S, { offset, cur });
    S.chain = S.chain.then(load).then(() => { if (cur < 0) { S.cur = S.rows.length - 1; paint(); } });
    return true;
  }

  function move(step) {
    const k = S.cur + step;
    if (k >= 0 && k < S.rows.length) { S.cur = k; paint(); } else turn(step, step > 0 ? 0 : -1);
  }

  function local(r, source, fi) {
    r.source = source;
    r.final_index = source === "not_a_product" ? null : source === "corrected" ? fi : r.predicted_index;
  }

  // Save `changes` ([{row, source, final_index}]): shown at once, sent behind the saves in flight; the keys pressed
  // while one request is in flight go together in the next one (one transaction), so a quick reviewer never waits on
  // a queue of requests. undo=false records the rows' previous state for U.
  function save(changes, undo, label) {
    const before = changes.map(({ row }) => ({ row, source: row.source, final_index: row.final_index }));
    for (const c of changes) { local(c.row, c.source, c.final_index); c.row._saving = true; }
    for (const c of changes) { const k = S.rows.indexOf(c.row); if (k >= 0) redraw(k); }
    S.outbox.push({ changes, before, undo, label, t0: performance.now() });
    flush();
  }

  async function flush() {
    if (S.inflight || !S.outbox.length) return drain();
    const sent = S.outbox.splice(0);
    S.inflight = true;
    const next = new Map();  // a row changed twice in one request: the second change expects the first one's version
    const changes = sent.flatMap((e) => e.changes).map((c) => {
      const version = next.has(c.row.idx) ? next.get(c.row.idx) : c.row.version;
      next.set(c.row.idx, version + 1);
      return { idx: c.row.idx, version, source: c.source, final_index: c.final_index };
    });
    const rows = [...new Set(sent.flatMap((e) => e.changes.map((c) => c.row)))];
    try {
      const d = await call(`/batches/${S.batch}/changes`, { reviewer: name(), changes });
      const clash = new Set(d.conflicts.map((r) => r.idx));
      settle(d, rows);
      for (const e of sent) {
        S.saved.push(performance.now() - e.t0);
        if (e.changes.some((c) => clash.has(c.row.idx))) continue;
        if (!e.undo) S.undo.push(e.before);
        if (!clash.size) say(`Сохранено: ${e.label}.`);
      }
    } catch (err) {
      for (const e of sent.reverse()) e.before.forEach((b) => { local(b.row, b.source, b.final_index); b.row._saving = false; });
      render();
      say(`⚠ Не сохранено: ${err.message}. Повторите.`);
    }
    S.inflight = false;
    flush();
  }

  // U presses wait until the saves before them are answered, then undo the last saved action, one per press.
  function drain() {
    while (S.undos > 0 && !S.inflight && !S.outbox.length) {
      S.undos -= 1;
      const last = S.undo.pop();
      if (!last) { say("Отменять нечего."); continue; }
      save(last.map((b) => ({ row: b.row, source: b.source, final_index: b.final_index })), true,
        `отменено (${last.length} фото)`);
      const k = S.rows.indexOf(last[0].row);
      if (k >= 0) { S.cur = k; paint(); }
    }
  }

  // Every save answered (and every undo done): what a page load or "принять остальные" waits for.
  function idle() {
    return new Promise((done) => {
      const check = () => (!S.inflight && !S.outbox.length && !S.undos ? done() : setTimeout(check, 10));
      check();
    });
  }
  window.fcIdle = idle;

  // Apply the server's answer: saved rows take their new version; a conflict shows the row as someone else left it.
  function settle(d, rows) {
    const byIdx = new Map(rows.map((r) => [r.idx, r]));
    for (const r of rows) r._saving = false;
    for (const fresh of d.rows) { const r = byIdx.get(fresh.idx); if (r) Object.assign(r, fresh, { _conflict: false }); }
    for (const fresh of d.conflicts) {
      const r = byIdx.get(fresh.idx) || {};
      Object.assign(r, fresh, { _conflict: true });
      const what = fresh.source === "not_a_product" ? "не товар" : ru(fresh.final_index);
      say(`⚠ Конфликт: фото №${fresh.idx + 1} уже изменил(а) ${fresh.reviewer || "другой проверяющий"} ` +
          `(${what}, ${SOURCES[fresh.source]}). Ваше изменение не сохранено.`);
    }
    S.info = d.batch;
    summary();
    for (const r of rows) { const k = S.rows.indexOf(r); if (k >= 0) redraw(k); }
  }

  function act(source, fi) {
    const r = S.rows[S.cur];
    if (!r || r.source === "failed") return;
    const label = `№${r.idx + 1} — ${source === "not_a_product" ? "не товар" : ru(source === "corrected" ? fi : r.predicted_index)}`;
    save([{ row: r, source, final_index: fi }], false, label);
    if (S.cur < S.rows.length - 1) { S.cur += 1; paint(); }
  }

  function undo() { S.undos += 1; drain(); }

  function acceptRest() {
    S.chain = S.chain.then(idle).then(async () => {
      try {
        const d = await call(`/batches/${S.batch}/accept`, { filter: S.filter, reviewer: name() });
        // an undo sets each accepted row back to unreviewed, at the version the accept left it
        S.undo.push(d.rows.map((fresh) => ({ row: S.rows.find((r) => r.idx === fresh.idx) || fresh, source: "model",
                                              final_index: fresh.predicted_index, fresh })));
        for (const u of S.undo[S.undo.length - 1]) Object.assign(u.row, u.fresh);
        S.info = d.batch;
        summary();
        render();
        say(`Сохранено: принято ${d.rows.length} фото.`);
      } catch (e) { say(`⚠ Не сохранено: ${e.message}. Повторите.`); }
    });
  }

  const DIGITS = { Digit1: 0, Digit2: 1, Digit3: 2, Digit4: 3, Digit5: 4, Digit6: 5, Digit7: 6, Digit8: 7, Digit9: 8, Digit0: 9,
                   Numpad1: 0, Numpad2: 1, Numpad3: 2, Numpad4: 3, Numpad5: 4, Numpad6: 5, Numpad7: 6, Numpad8: 7, Numpad9: 8,
                   Numpad0: 9 };
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (!S.info || e.ctrlKey || e.metaKey || e.altKey || t.closest?.("input, textarea, select, [contenteditable]")) return;
    const table = $(".fc-table");
    if (!table || table.offsetParent === null) return;  // the queue's tab is not shown
    const t0 = e.timeStamp;
    const k = e.code;
    if (k in DIGITS && DIGITS[k] < S.classes.length) act("corrected", DIGITS[k]);
    else if (k === "Enter" || k === "NumpadEnter") act("confirmed", null);
    else if (k === "KeyN") act("not_a_product", null);
    else if (k === "KeyJ" || k === "ArrowDown") move(1);
    else if (k === "KeyK" || k === "ArrowUp") move(-1);
    else if (k === "KeyU") undo();
    else if (k === "KeyA") acceptRest();
    else if (k === "KeyF") setFilter(FILTERS[(FILTERS.findIndex(([f]) => f === S.filter) + 1) % FILTERS.length][0]);
    else if (k === "KeyE") $("#fc-csv").click();
    else return;
    e.preventDefault();
    requestAnimationFrame(() => setTimeout(() => S.latency.push(performance.now() - t0), 0));  // to the next frame drawn
  });

  window.fcOpen = (id) => { if (id) open(id); };
  const wait = setInterval(() => {
    const root = document.getElementById("fc-queue");
    if (root && !root.querySelector(".fc-top")) { clearInterval(wait); mount(root); }
  }, 50);
})();
