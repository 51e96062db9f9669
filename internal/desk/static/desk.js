// The desk's only script: WebAuthn ceremonies and the posts that carry
// them. Pages render without it; passkeys cannot.
"use strict";

const b64u = {
  enc(buf) {
    const bytes = new Uint8Array(buf);
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  dec(str) {
    const s = atob(str.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((str.length + 3) % 4));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out.buffer;
  },
};

function say(text, bad) {
  const el = document.getElementById("status");
  if (!el) return;
  el.textContent = text;
  el.className = bad ? "warn" : "ok";
}

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    throw new Error((data.reason || data.error || res.status) + ": " + (data.message || res.statusText));
  }
  return data;
}

// assert asks the passkey to sign challenge (base64url).
async function assert(begin) {
  const cred = await navigator.credentials.get({
    publicKey: {
      challenge: b64u.dec(begin.challenge),
      rpId: begin.rp_id,
      allowCredentials: (begin.allow || []).map((id) => ({ type: "public-key", id: b64u.dec(id) })),
      userVerification: "preferred",
      timeout: 120000,
    },
  });
  return {
    credential_id: b64u.enc(cred.rawId),
    authenticator_data: b64u.enc(cred.response.authenticatorData),
    client_data_json: b64u.enc(cred.response.clientDataJSON),
    signature: b64u.enc(cred.response.signature),
  };
}

async function signin(ev) {
  ev.preventDefault();
  try {
    const principal = document.getElementById("principal").value.trim();
    say("Waiting for your passkey…");
    const begin = await post("/ui/signin/begin", { principal });
    const done = await post("/ui/signin/finish", await assert(begin));
    location.assign(done.next);
  } catch (e) {
    say("Sign-in failed: " + e.message, true);
  }
}

async function enroll(ev) {
  ev.preventDefault();
  try {
    const principal = document.getElementById("enroll-principal").value.trim();
    const rpId = location.hostname;
    const userId = new Uint8Array(16);
    crypto.getRandomValues(userId);
    const challenge = new Uint8Array(32);
    crypto.getRandomValues(challenge);
    say("Creating a passkey…");
    const cred = await navigator.credentials.create({
      publicKey: {
        rp: { id: rpId, name: "uapk-proxy approvals" },
        user: { id: userId, name: principal, displayName: principal },
        challenge,
        pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -8 }],
        authenticatorSelection: { residentKey: "preferred", userVerification: "preferred" },
        attestation: "none",
        timeout: 120000,
      },
    });
    const spki = cred.response.getPublicKey();
    if (!spki) throw new Error("this browser does not give the passkey's public key");
    const out = await post("/ui/enroll/entry", {
      principal, credential_id: b64u.enc(cred.rawId), public_key: b64u.enc(spki),
    });
    const pre = document.getElementById("entry");
    pre.textContent = "# add to the principals file, under principals:\n" + out.entry;
    pre.hidden = false;
    say("Passkey created. Have this entry added to the principals file.");
  } catch (e) {
    say("Enrolment failed: " + e.message, true);
  }
}

async function decide(ev) {
  const form = document.getElementById("decide-form");
  const decision = ev.currentTarget.dataset.decision;
  const reason = document.getElementById("reason").value;
  if (decision === "reject" && !reason.trim()) {
    say("A rejection needs a reason.", true);
    return;
  }
  const id = form.dataset.approval;
  try {
    const begin = await post("/ui/approvals/" + id + "/challenge", { decision });
    say("Sign with your passkey: " + decision + " " + id);
    const webauthn = await assert(begin);
    const out = await post("/ui/approvals/" + id + "/decide", { reason, webauthn });
    if (out.status === "queued") {
      say("Queued: " + out.message);
    } else {
      say("Recorded: " + out.status + (out.still_needed && out.still_needed.length ? "; still needed: " + out.still_needed.join(" + ") : ""));
    }
    location.assign(out.next);
  } catch (e) {
    say("Not recorded: " + e.message, true);
  }
}

async function signout() {
  try {
    const out = await post("/ui/signout", {});
    location.assign(out.next);
  } catch (e) {
    say(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const on = (id, ev, fn) => { const el = document.getElementById(id); if (el) el.addEventListener(ev, fn); };
  on("signin-form", "submit", signin);
  on("enroll-form", "submit", enroll);
  on("approve", "click", decide);
  on("reject", "click", decide);
  on("signout", "click", signout);
});
