// warelay simulator chat page. Plain JS, no build step.
// Every piece of message text goes into the page through textContent / createTextNode; never innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    waId: null,
    name: "Test User",
    numberId: null,
    display: "",
    version: null,
    byId: new Map(),
    list: null,
  };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeUrl(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  // WhatsApp markup: ```mono```, `code`, *bold*, _italic_, ~strike~. A marker only counts at a word
  // boundary (snake_case_words stay plain), and styles nest (*_both_*).
  const MARKUP = new RegExp(
    "```([\\s\\S]+?)```" +
      "|`([^`\\n]+)`" +
      "|(?<![\\p{L}\\p{N}*])\\*(\\S(?:[^*\\n]*?\\S)?)\\*(?![\\p{L}\\p{N}])" +
      "|(?<![\\p{L}\\p{N}_])_(\\S(?:[^_\\n]*?\\S)?)_(?![\\p{L}\\p{N}])" +
      "|(?<![\\p{L}\\p{N}~])~(\\S(?:[^~\\n]*?\\S)?)~(?![\\p{L}\\p{N}])",
    "gu",
  );

  function formatted(text) {
    const frag = document.createDocumentFragment();
    const source = String(text ?? "");
    const re = new RegExp(MARKUP.source, MARKUP.flags);
    let last = 0;
    let match;
    while ((match = re.exec(source)) !== null) {
      if (match.index > last) frag.appendChild(document.createTextNode(source.slice(last, match.index)));
      let node;
      if (match[1] !== undefined) node = el("pre", "mono", match[1]);
      else if (match[2] !== undefined) node = el("code", null, match[2]);
      else {
        const tag = match[3] !== undefined ? "strong" : match[4] !== undefined ? "em" : "s";
        node = el(tag);
        node.appendChild(formatted(match[3] ?? match[4] ?? match[5]));
      }
      frag.appendChild(node);
      last = re.lastIndex;
    }
    if (last < source.length) frag.appendChild(document.createTextNode(source.slice(last)));
    return frag;
  }

  function textBlock(text, cls) {
    const div = el("div", cls ? `text ${cls}` : "text");
    div.appendChild(formatted(text));
    return div;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  // ------------------------------------------------------------------------------------------ API

  async function api(path, options) {
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  async function send(payload) {
    if (!state.waId) return;
    const body = { ...payload, name: state.name, number_id: state.numberId };
    state.version = null;
    const result = await api(`/_sim/users/${encodeURIComponent(state.waId)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!result.ok) showError(`Could not send: ${result.data?.error ?? result.status}`);
    else if (!result.data.delivered)
      showError(`warelay did not accept the webhook (last answer: ${result.data.status ?? "no answer"})`);
    else showError("");
    state.version = null;
  }

  function replyContext(messageId) {
    return { from: state.display, id: messageId };
  }

  function sendInteractive(reply, messageId) {
    return send({ message: { type: "interactive", interactive: reply, context: replyContext(messageId) } });
  }

  function askLocation(messageId) {
    const answer = window.prompt("Location to share (latitude, longitude)", "52.3676, 4.9041");
    if (!answer) return;
    const [lat, lon] = answer.split(",").map((part) => Number(part.trim()));
    if (!Number.isFinite(lat) || !Number.isFinite(lon)) {
      showError("Enter the location as two numbers: latitude, longitude");
      return;
    }
    const message = { type: "location", location: { latitude: lat, longitude: lon } };
    if (messageId) message.context = replyContext(messageId);
    send({ message });
  }

  // ------------------------------------------------------------------------------------ rendering

  function mediaSource(content) {
    const link = safeUrl(content.link) ?? safeUrl(content.url);
    if (link) return link;
    if (typeof content.id === "string") return `/_sim/media/${encodeURIComponent(content.id)}`;
    return null;
  }

  function renderMedia(box, type, content) {
    const src = mediaSource(content);
    if (type === "image" || type === "sticker") {
      if (src) {
        const img = el("img", type === "sticker" ? "media-img sticker" : "media-img");
        img.alt = type;
        img.src = src;
        box.appendChild(img);
      } else box.appendChild(el("div", "label", `🖼 ${type}`));
    } else if (type === "video" || type === "audio") {
      if (src) {
        const player = el(type);
        player.controls = true;
        player.src = src;
        box.appendChild(player);
      } else box.appendChild(el("div", "label", type === "audio" ? "🎤 audio" : "🎬 video"));
    } else {
      const doc = el("div", "doc");
      doc.appendChild(el("span", null, "📄"));
      const name = content.filename || "document";
      if (src) {
        const link = el("a", null, name);
        link.href = src;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        doc.appendChild(link);
      } else doc.appendChild(el("span", null, name));
      box.appendChild(doc);
    }
    if (content.caption) box.appendChild(textBlock(content.caption));
  }

  function renderLocation(box, loc) {
    const lat = Number(loc.latitude);
    const lon = Number(loc.longitude);
    if (loc.name) box.appendChild(el("div", "header-text", `📍 ${loc.name}`));
    if (loc.address) box.appendChild(el("div", "text", loc.address));
    const link = el("a", null, `${lat.toFixed(5)}, ${lon.toFixed(5)}`);
    if (Number.isFinite(lat) && Number.isFinite(lon)) {
      link.href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
    }
    if (!loc.name) box.appendChild(el("span", null, "📍 "));
    box.appendChild(link);
  }

  function renderContacts(box, contacts) {
    for (const contact of Array.isArray(contacts) ? contacts : []) {
      box.appendChild(el("div", "header-text", `👤 ${contact?.name?.formatted_name ?? "contact"}`));
      for (const phone of contact?.phones ?? []) box.appendChild(el("div", "label", phone.phone ?? phone.wa_id));
    }
  }

  function renderHeader(box, header) {
    if (!header || typeof header !== "object") return;
    if (header.type === "text") box.appendChild(el("div", "header-text", header.text));
    else if (header[header.type]) renderMedia(box, header.type, header[header.type]);
  }

  function actions(box) {
    const bar = el("div", "actions");
    box.appendChild(bar);
    return bar;
  }

  function renderInteractive(box, m, inter) {
    const type = inter.type;
    if (type === "button_reply" || type === "list_reply") {
      const reply = inter[type] ?? {};
      box.appendChild(textBlock(reply.title ?? reply.id ?? ""));
      if (reply.description) box.appendChild(el("div", "label", reply.description));
      return;
    }
    if (type === "nfm_reply") {
      box.appendChild(el("div", "text", `📝 ${inter.nfm_reply?.body ?? "Sent"}`));
      return;
    }
    renderHeader(box, inter.header);
    if (inter.body?.text) box.appendChild(textBlock(inter.body.text));
    if (inter.footer?.text) box.appendChild(el("div", "footer-text", inter.footer.text));
    const action = inter.action ?? {};
    if (type === "button") {
      const bar = actions(box);
      for (const button of action.buttons ?? []) {
        const reply = button.reply ?? {};
        const b = el("button", null, `↩ ${reply.title ?? ""}`);
        b.type = "button";
        b.addEventListener("click", () =>
          sendInteractive({ type: "button_reply", button_reply: { id: reply.id, title: reply.title } }, m.id),
        );
        bar.appendChild(b);
      }
    } else if (type === "list") {
      const b = el("button", null, `☰ ${action.button ?? "Menu"}`);
      b.type = "button";
      b.addEventListener("click", () => openList(m, inter));
      actions(box).appendChild(b);
    } else if (type === "cta_url") {
      const params = action.parameters ?? {};
      const url = safeUrl(params.url);
      const link = el("a", null, `↗ ${params.display_text ?? "Open"}`);
      if (url) {
        link.href = url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
      }
      actions(box).appendChild(link);
    } else if (type === "location_request_message") {
      const b = el("button", null, "📍 Send location");
      b.type = "button";
      b.addEventListener("click", () => askLocation(m.id));
      actions(box).appendChild(b);
    } else if (type === "flow") {
      const params = action.parameters ?? {};
      const b = el("button", null, params.flow_cta ?? "Open");
      b.type = "button";
      b.title = "Flows are not simulated: this sends an empty form response";
      b.addEventListener("click", () =>
        sendInteractive(
          {
            type: "nfm_reply",
            nfm_reply: {
              name: "flow",
              body: "Sent",
              response_json: JSON.stringify({ flow_token: params.flow_token ?? "unused" }),
            },
          },
          m.id,
        ),
      );
      actions(box).appendChild(b);
    } else {
      const b = el("button", null, `🛍 ${type.replace(/_/g, " ")}`);
      b.type = "button";
      b.disabled = true;
      actions(box).appendChild(b);
    }
  }

  function renderTemplate(box, template) {
    box.appendChild(el("div", "label", `📋 template ${template.name ?? ""} (${template.language?.code ?? "?"})`));
    for (const component of template.components ?? []) {
      const texts = (component.parameters ?? [])
        .map((p) => p.text ?? p.payload ?? p.currency?.fallback_value ?? p.date_time?.fallback_value)
        .filter((t) => typeof t === "string" || typeof t === "number");
      if (texts.length) box.appendChild(el("div", "text", `${component.type}: ${texts.join(" · ")}`));
    }
  }

  function renderContent(box, m) {
    const msg = m.message ?? {};
    const type = m.type;
    const content = msg[type];
    if (type === "text") box.appendChild(textBlock(content?.body ?? ""));
    else if (["image", "video", "audio", "document", "sticker"].includes(type)) renderMedia(box, type, content ?? {});
    else if (type === "location") renderLocation(box, content ?? {});
    else if (type === "contacts") renderContacts(box, content);
    else if (type === "interactive") renderInteractive(box, m, content ?? {});
    else if (type === "template") renderTemplate(box, content ?? {});
    else if (type === "button") box.appendChild(textBlock(content?.text ?? content?.payload ?? ""));
    else box.appendChild(el("div", "label", `[${type}]`));
  }

  const TICKS = {
    pending: ["🕓", ""],
    accepted: ["🕓", ""],
    sent: ["✓", ""],
    delivered: ["✓✓", ""],
    read: ["✓✓", "read"],
    failed: ["⚠ failed", "failed"],
  };

  function quoteOf(m) {
    const ctx = m.message?.context;
    const target = ctx && state.byId.get(ctx.id ?? ctx.message_id);
    if (!target) return null;
    const tmsg = target.message ?? {};
    const c = tmsg[target.type] ?? {};
    const text = c.body?.text ?? c.body ?? c.caption ?? c.text ?? c.name ?? `[${target.type}]`;
    return el("div", "quote", typeof text === "string" ? text : `[${target.type}]`);
  }

  function renderMessage(m, reaction) {
    const row = el("div", m.direction === "in" ? "row mine" : "row theirs");
    const box = el("div", "bubble");
    const quote = quoteOf(m);
    if (quote) box.appendChild(quote);
    renderContent(box, m);
    const meta = el("div", "meta");
    meta.appendChild(el("span", null, new Date(m.at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    const [mark, cls] = TICKS[m.status] ?? ["", ""];
    const ticks = el("span", cls ? `ticks ${cls}` : "ticks", mark);
    ticks.title = m.status;
    meta.appendChild(ticks);
    box.appendChild(meta);
    if (reaction) {
      box.appendChild(el("span", "reaction", reaction));
      row.classList.add("has-reaction");
    }
    row.appendChild(box);
    return row;
  }

  function render(view) {
    const box = $("messages");
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    state.byId = new Map(view.messages.map((m) => [m.id, m]));
    const reactions = new Map();
    const orphanReactions = [];
    for (const m of view.messages) {
      if (m.type !== "reaction") continue;
      const r = m.message?.reaction ?? {};
      if (state.byId.has(r.message_id)) reactions.set(r.message_id, r.emoji || "");
      else orphanReactions.push(m);
    }
    const rows = [];
    for (const m of view.messages) {
      if (m.type === "reaction") continue;
      rows.push(renderMessage(m, reactions.get(m.id)));
    }
    for (const m of orphanReactions) rows.push(el("div", "note", `reaction ${m.message?.reaction?.emoji ?? ""}`));
    box.replaceChildren(...rows);
    if (nearBottom) box.scrollTop = box.scrollHeight;
  }

  function openList(m, inter) {
    const dialog = $("list-dialog");
    $("list-title").textContent = inter.action?.button ?? "Choose";
    const sections = $("list-sections");
    sections.replaceChildren();
    const rows = [];
    for (const section of inter.action?.sections ?? []) {
      if (section.title) sections.appendChild(el("h4", null, section.title));
      for (const row of section.rows ?? []) {
        const label = el("label");
        const input = el("input");
        input.type = "radio";
        input.name = "row";
        input.value = String(rows.length);
        rows.push(row);
        label.appendChild(input);
        const text = el("div");
        text.appendChild(el("div", null, row.title));
        if (row.description) text.appendChild(el("div", "desc", row.description));
        label.appendChild(text);
        sections.appendChild(label);
      }
    }
    state.list = { message: m, rows };
    dialog.returnValue = "";
    dialog.showModal();
  }

  $("list-dialog").addEventListener("close", () => {
    const dialog = $("list-dialog");
    const picked = dialog.querySelector('input[name="row"]:checked');
    const list = state.list;
    state.list = null;
    if (dialog.returnValue !== "send" || !picked || !list) return;
    const row = list.rows[Number(picked.value)];
    const reply = { id: row.id, title: row.title };
    if (row.description) reply.description = row.description;
    sendInteractive({ type: "list_reply", list_reply: reply }, list.message.id);
  });

  // -------------------------------------------------------------------------------- chat selection

  function openChat(waId, name, numberId) {
    state.waId = waId;
    state.name = name || "Test User";
    if (numberId) state.numberId = numberId;
    state.version = null;
    const number = (state.numbers ?? []).find((n) => n.phone_number_id === state.numberId);
    state.display = number?.display_phone_number ?? "";
    $("number").value = state.numberId;
    $("wa-id").value = waId;
    $("name").value = state.name;
    $("title").textContent = `+${state.display} · you are ${state.name} (+${waId})`;
    $("text").disabled = false;
    $("send").disabled = false;
    $("messages").replaceChildren();
    localStorage.setItem("warelay-sim", JSON.stringify({ waId, name: state.name, numberId: state.numberId }));
    refreshUsers();
    $("text").focus();
  }

  async function loadNumbers() {
    const result = await api("/_sim/state");
    if (!result.ok) return;
    state.numbers = result.data.numbers;
    const select = $("number");
    select.replaceChildren();
    for (const number of state.numbers) {
      const option = el("option", null, `+${number.display_phone_number} (${number.phone_number_id})`);
      option.value = number.phone_number_id;
      select.appendChild(option);
    }
    state.numberId = state.numberId ?? state.numbers[0]?.phone_number_id ?? null;
  }

  async function refreshUsers() {
    const result = await api("/_sim/users");
    if (!result.ok) return;
    const list = $("users");
    list.replaceChildren();
    for (const user of result.data.users) {
      const li = el("li", user.wa_id === state.waId && user.number_id === state.numberId ? "active" : "");
      li.appendChild(el("div", null, `${user.name ?? "?"} (+${user.wa_id})`));
      li.appendChild(el("div", "sub", `${user.messages} messages · number ${user.number_id}`));
      li.addEventListener("click", () => openChat(user.wa_id, user.name, user.number_id));
      list.appendChild(li);
    }
  }

  async function poll() {
    if (state.waId) {
      try {
        const query = new URLSearchParams({ number_id: state.numberId ?? "" });
        if (state.version !== null) query.set("version", String(state.version));
        const result = await api(`/_sim/users/${encodeURIComponent(state.waId)}/chat?${query}`);
        if (result.ok) {
          $("typing").hidden = !result.data.typing;
          if (!result.data.unchanged) {
            state.version = result.data.version;
            render(result.data);
          }
        }
      } catch (_) {
        // The simulator may be restarting; try again on the next tick.
      }
    }
    window.setTimeout(poll, 500);
  }

  $("who").addEventListener("submit", (event) => {
    event.preventDefault();
    const waId = $("wa-id").value.replace(/\D/g, "");
    if (!waId) return;
    openChat(waId, $("name").value.trim(), $("number").value);
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    send({ text });
  });

  $("send-location").addEventListener("click", () => askLocation(null));

  (async () => {
    await loadNumbers();
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem("warelay-sim") ?? "null");
    } catch (_) {
      saved = null;
    }
    if (saved?.waId) openChat(saved.waId, saved.name, (state.numbers ?? []).some((n) => n.phone_number_id === saved.numberId) ? saved.numberId : state.numberId);
    else refreshUsers();
    window.setInterval(refreshUsers, 3000);
    poll();
  })();
})();
