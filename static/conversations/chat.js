// The chat page: conversations over the REST API, answers streamed over /ws/chat/<id>/.
// Everything the model or a user wrote is inserted with textContent, never as HTML.
(function () {
  "use strict";

  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const canOpenIpr = document.body.dataset.canOpenIpr === "true";
  const el = (id) => document.getElementById(id);
  const state = { conversationId: null, socket: null, reply: null, iprs: new Map(), closing: false };

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function api(path, options) {
    const init = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    init.headers = Object.assign({ Accept: "application/json", "X-CSRFToken": csrfToken }, init.headers);
    if (init.body && typeof init.body !== "string") {
      init.body = JSON.stringify(init.body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.message || "HTTP " + response.status);
      error.data = data;
      throw error;
    }
    return data;
  }

  function setStatus(text, kind) {
    const node = el("status");
    node.textContent = text;
    node.dataset.kind = kind || "";
  }

  // --- conversations -----------------------------------------------------------------------------------------------
  async function loadConversations() {
    const rows = await api("/api/v1/conversations");
    const list = el("conversation-list");
    list.replaceChildren();
    for (const row of rows) {
      const item = make("li");
      const button = make("button", "conversation" + (row.id === state.conversationId ? " active" : ""));
      button.type = "button";
      button.textContent = row.title || "Untitled conversation";
      button.dataset.id = row.id;
      button.addEventListener("click", () => openConversation(row.id));
      item.appendChild(button);
      list.appendChild(item);
    }
  }

  async function openConversation(id) {
    disconnect();
    state.conversationId = id;
    state.reply = null;
    state.iprs.clear();
    el("messages").replaceChildren();
    el("ipr-list").replaceChildren();
    el("ipr-panel").hidden = true;
    showBlueprint(null);
    history.replaceState(null, "", "/chat/?c=" + encodeURIComponent(id));
    const detail = await api("/api/v1/conversations/" + encodeURIComponent(id));
    for (const message of detail.messages) renderStoredMessage(message);
    showBlueprint(detail.current_blueprint);
    for (const ipr of detail.iprs) upsertIpr(ipr);
    await loadConversations();
    return connect(id);
  }

  function renderStoredMessage(message) {
    const bubble = addMessage(message.role, message.content);
    bubble.dataset.status = message.status;
    for (const call of message.tool_calls || []) {
      addToolLine(bubble, call.tool, call.ok ? "✓ " + (call.summary || "done") : "✗ " + ((call.error && call.error.message) || "failed"));
    }
    if (message.status === "failed" && message.error) addNote(bubble, message.error.message || "the answer failed", "error");
    if (message.status === "running") {
      addNote(bubble, "still answering…", "pending");
      state.reply = bubble;
    }
  }

  function addMessage(role, text) {
    const item = make("li", "msg " + role);
    item.appendChild(make("div", "who", role === "user" ? "You" : "Assistant"));
    item.appendChild(make("ul", "tools"));
    item.appendChild(make("div", "text", text || ""));
    el("messages").appendChild(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function addToolLine(bubble, tool, text) {
    const line = make("li", "tool");
    line.appendChild(make("code", "", tool));
    line.appendChild(document.createTextNode(" " + text));
    bubble.querySelector(".tools").appendChild(line);
  }

  function addNote(bubble, text, kind) {
    bubble.appendChild(make("div", "note " + (kind || ""), text));
  }

  // --- the socket ----------------------------------------------------------------------------------------------------
  function connect(id) {
    return new Promise((resolve) => {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(scheme + location.host + "/ws/chat/" + encodeURIComponent(id) + "/");
      state.socket = socket;
      state.closing = false;
      setStatus("Connecting…");
      socket.addEventListener("message", (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch (err) {
          return;
        }
        if (event.type === "ready") resolve(socket);
        handle(event);
      });
      socket.addEventListener("close", (close) => {
        resolve(socket);
        if (state.socket !== socket) return;
        setStatus("Disconnected (" + close.code + ")", "error");
        el("send").disabled = false;
        if (!state.closing && close.code !== 4401 && close.code !== 4403 && state.conversationId === id) {
          setTimeout(() => state.conversationId === id && connect(id), 2000);
        }
      });
    });
  }

  function disconnect() {
    if (state.socket) {
      state.closing = true;
      state.socket.close();
      state.socket = null;
    }
  }

  function currentReply() {
    if (!state.reply) state.reply = addMessage("assistant", "");
    return state.reply;
  }

  function handle(event) {
    switch (event.type) {
      case "ready":
        setStatus("Connected", "ok");
        for (const ipr of event.iprs || []) upsertIpr(ipr);
        break;
      case "start": {
        const bubble = currentReply();
        bubble.dataset.status = "running";
        bubble.dataset.messageId = event.message_id;
        setStatus("Thinking…", "busy");
        break;
      }
      case "tool_call":
        addToolLine(currentReply(), event.tool, "…");
        break;
      case "tool_result": {
        const lines = currentReply().querySelectorAll(".tools li");
        const line = lines[lines.length - 1];
        const text = event.ok ? "✓ " + (event.summary || "done") : "✗ " + ((event.error && event.error.message) || "failed");
        if (line) {
          line.replaceChildren(make("code", "", event.tool), document.createTextNode(" " + text));
        } else {
          addToolLine(currentReply(), event.tool, text);
        }
        break;
      }
      case "token": {
        const text = currentReply().querySelector(".text");
        text.textContent += event.text;
        setStatus("Answering…", "busy");
        break;
      }
      case "blueprint":
        showBlueprint(event);
        break;
      case "ipr":
        upsertIpr(event);
        break;
      case "deployment":
        showDeployment(event);
        break;
      case "done": {
        const bubble = currentReply();
        bubble.dataset.status = "complete";
        const text = bubble.querySelector(".text");
        if (event.reply && event.reply.content) text.textContent = event.reply.content;
        bubble.querySelectorAll(".note.pending").forEach((n) => n.remove());
        state.reply = null;
        el("send").disabled = false;
        setStatus("Connected", "ok");
        loadConversations();
        break;
      }
      case "error": {
        const message = event.message || event.error || "error";
        if (state.reply) {
          addNote(state.reply, message, "error");
          state.reply.dataset.status = "failed";
          if (event.reply) state.reply = null;
        }
        el("send").disabled = false;
        setStatus(message, "error");
        break;
      }
      default:
        break;
    }
  }

  // --- blueprint and IPRs -----------------------------------------------------------------------------------------
  function showBlueprint(bp) {
    const panel = el("blueprint-panel");
    if (!bp) {
      panel.hidden = true;
      panel.dataset.versionId = "";
      el("empty-hint").hidden = false;
      return;
    }
    panel.hidden = false;
    el("empty-hint").hidden = true;
    panel.dataset.versionId = bp.version_id;
    el("bp-name").textContent = bp.name + " v" + bp.number;
    el("bp-commit").textContent = bp.commit_id;
    el("bp-cost").textContent = bp.cost ? bp.cost.monthly_total.toFixed(2) + " " + bp.cost.currency : "–";
    const findings = el("bp-findings");
    findings.replaceChildren();
    for (const severity of ["critical", "high", "medium", "low"]) {
      const count = bp.findings ? bp.findings[severity] || 0 : 0;
      if (count) findings.appendChild(make("span", "sev " + severity, count + " " + severity));
    }
    if (!findings.childNodes.length) findings.appendChild(make("span", "sev none", "none"));
    el("bp-yaml").textContent = bp.yaml || "";
    el("bp-topology").src = "/api/v1/blueprints/versions/" + encodeURIComponent(bp.version_id) + "/topology.svg";
    el("ipr-form").hidden = !canOpenIpr;
    el("ipr-hint").textContent = canOpenIpr
      ? "Opening an IPR asks reviewers to approve this version; nothing is deployed before they do."
      : "Your role cannot open IPRs.";
  }

  function upsertIpr(ipr) {
    el("ipr-panel").hidden = false;
    let item = state.iprs.get(ipr.id);
    if (!item) {
      item = make("li", "ipr");
      item.dataset.id = ipr.id;
      item.appendChild(make("a", "ipr-title"));
      item.appendChild(make("span", "ipr-state"));
      item.appendChild(make("ul", "progress"));
      state.iprs.set(ipr.id, item);
      el("ipr-list").appendChild(item);
    }
    const link = item.querySelector(".ipr-title");
    link.href = "/admin/iprs/ipr/" + encodeURIComponent(ipr.id) + "/change/";
    if (ipr.title) link.textContent = "#" + ipr.id + " " + ipr.title + (ipr.environment ? " → " + ipr.environment : "");
    const stateNode = item.querySelector(".ipr-state");
    if (ipr.state) {
      stateNode.textContent = ipr.state;
      stateNode.dataset.state = ipr.state;
      item.dataset.state = ipr.state;
    }
  }

  function showDeployment(event) {
    const item = state.iprs.get(event.ipr);
    if (!item) return;
    const progress = item.querySelector(".progress");
    if (event.event === "operation") {
      let row = progress.querySelector('[data-resource="' + CSS.escape(String(event.resource)) + '"]');
      if (!row) {
        row = make("li");
        row.dataset.resource = event.resource;
        progress.appendChild(row);
      }
      row.textContent = event.action + " " + event.resource + ": " + event.status + (event.error ? " (" + event.error + ")" : "");
      row.dataset.status = event.status;
    } else {
      const line = make("li", "deployment-" + event.event, "deployment " + event.event + (event.status ? ": " + event.status : ""));
      progress.appendChild(line);
    }
  }

  async function loadEnvironments() {
    const select = el("environment");
    try {
      const rows = await api("/api/v1/environments");
      select.replaceChildren();
      for (const env of rows) {
        const option = make("option", "", env.name + (env.kind ? " (" + env.kind + ")" : ""));
        option.value = env.name;
        select.appendChild(option);
      }
      if (!rows.length) select.appendChild(make("option", "", "no environments"));
    } catch (err) {
      el("ipr-hint").textContent = "Environments could not be loaded: " + err.message;
    }
  }

  // --- actions -----------------------------------------------------------------------------------------------------
  async function send(text) {
    if (!state.conversationId) {
      const created = await api("/api/v1/conversations", { method: "POST", body: { title: text } });
      await openConversation(created.id);
    }
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) await connect(state.conversationId);
    addMessage("user", text);
    state.reply = null;
    currentReply().dataset.status = "running";
    el("send").disabled = true;
    state.socket.send(JSON.stringify({ type: "message", text: text }));
  }

  el("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = el("message-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text).catch((err) => setStatus(err.message, "error"));
  });

  el("message-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      el("composer").requestSubmit();
    }
  });

  el("new-conversation").addEventListener("click", () => {
    disconnect();
    state.conversationId = null;
    el("messages").replaceChildren();
    state.iprs.clear();
    el("ipr-list").replaceChildren();
    el("ipr-panel").hidden = true;
    showBlueprint(null);
    history.replaceState(null, "", "/chat/");
    setStatus("New conversation");
    loadConversations();
  });

  el("ipr-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const environment = el("environment").value;
    el("open-ipr").disabled = true;
    try {
      const result = await api("/api/v1/conversations/" + encodeURIComponent(state.conversationId) + "/ipr", {
        method: "POST",
        body: { environment: environment },
      });
      upsertIpr(result.ipr);
      el("ipr-hint").textContent = result.summary;
    } catch (err) {
      el("ipr-hint").textContent = "Could not open an IPR: " + err.message;
    } finally {
      el("open-ipr").disabled = false;
    }
  });

  // --- start -------------------------------------------------------------------------------------------------------
  loadEnvironments();
  const requested = new URLSearchParams(location.search).get("c");
  if (requested) {
    openConversation(requested).catch((err) => setStatus(err.message, "error"));
  } else {
    loadConversations().catch((err) => setStatus(err.message, "error"));
  }
})();
