// Security keys (WebAuthn) for the pages: a form marked data-webauthn="create" (register a key)
// or "get" (log in with one) runs the ceremony when it is submitted, puts the key's answer
// as JSON into its hidden "credential" field (the shape python-fido2's
// RegistrationResponse / AuthenticationResponse.from_dict read) and then submits the form.
//
//   <form method="post" data-webauthn="get" data-webauthn-touch="..." data-webauthn-failed="...">
//     <input type="hidden" name="credential" value="">
//     <script type="application/json" class="webauthn-options">{...}</script>
//     <button type="submit">...</button>
//     <p class="webauthn-status" role="status" aria-live="polite"></p>
//   </form>
//
// The options block holds python-fido2's dict(options): either {"publicKey": {...}} or the
// "publicKey" member itself, with bytes as base64url. While the browser waits for the key,
// the status line asks the person to touch it; if it fails or is cancelled, the status line
// says so and the button can be used again. Pages work without this file for every other
// credential; a <noscript> text on the page names them.
"use strict";

(function () {
  function fromBase64url(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      var copy = Object.assign({}, item);
      copy.id = fromBase64url(item.id);
      return copy;
    });
  }

  // JSON options -> what navigator.credentials wants (ArrayBuffers where the spec has bytes).
  function creationOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    var options = Object.assign({}, json);
    options.challenge = fromBase64url(json.challenge);
    options.user = Object.assign({}, json.user, { id: fromBase64url(json.user.id) });
    options.excludeCredentials = descriptors(json.excludeCredentials);
    return options;
  }

  function requestOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    var options = Object.assign({}, json);
    options.challenge = fromBase64url(json.challenge);
    options.allowCredentials = descriptors(json.allowCredentials);
    return options;
  }

  // The credential -> JSON with only the members the server reads.
  function credentialJson(credential, mode) {
    var response = credential.response;
    var answer = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults
        ? credential.getClientExtensionResults()
        : {},
      response: { clientDataJSON: toBase64url(response.clientDataJSON) },
    };
    if (credential.authenticatorAttachment) {
      answer.authenticatorAttachment = credential.authenticatorAttachment;
    }
    if (mode === "create") {
      answer.response.attestationObject = toBase64url(response.attestationObject);
    } else {
      answer.response.authenticatorData = toBase64url(response.authenticatorData);
      answer.response.signature = toBase64url(response.signature);
      if (response.userHandle && response.userHandle.byteLength) {
        answer.response.userHandle = toBase64url(response.userHandle);
      }
    }
    return answer;
  }

  function say(status, text) {
    if (status) {
      status.textContent = text || "";
    }
  }

  function enhance(form) {
    var mode = form.dataset.webauthn;
    var field = form.querySelector('input[name="credential"]');
    var block = form.querySelector("script.webauthn-options");
    var status = form.querySelector(".webauthn-status");
    if ((mode !== "create" && mode !== "get") || !field || !block) {
      return;
    }
    var busy = false;
    form.addEventListener("submit", function (event) {
      if (field.value) {
        return; // the ceremony is done: this is the real submission
      }
      event.preventDefault();
      if (busy) {
        return;
      }
      var submitter = event.submitter || null;
      if (!window.PublicKeyCredential || !navigator.credentials) {
        say(status, form.dataset.webauthnFailed);
        return;
      }
      var json;
      try {
        json = JSON.parse(block.textContent);
      } catch (error) {
        say(status, form.dataset.webauthnFailed);
        return;
      }
      var publicKey = json.publicKey || json;
      busy = true;
      say(status, form.dataset.webauthnTouch);
      var ceremony =
        mode === "create"
          ? navigator.credentials.create({ publicKey: creationOptions(publicKey) })
          : navigator.credentials.get({ publicKey: requestOptions(publicKey) });
      Promise.resolve(ceremony)
        .then(function (credential) {
          if (!credential) {
            throw new Error("no credential");
          }
          field.value = JSON.stringify(credentialJson(credential, mode));
          busy = false;
          if (form.requestSubmit) {
            form.requestSubmit(submitter);
          } else {
            form.submit();
          }
        })
        .catch(function () {
          busy = false;
          field.value = "";
          say(status, form.dataset.webauthnFailed);
          if (submitter) {
            submitter.focus();
          }
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("form[data-webauthn]");
    for (var i = 0; i < forms.length; i++) {
      enhance(forms[i]);
    }
  });
})();
