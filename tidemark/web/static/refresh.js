// Re-fetch the page every few seconds and swap its <main>, keeping scroll position and any
// open <details>; "pause" stops it (remembered for this tab). Without scripts, reload by hand.
(function () {
  const every = Number(document.body.dataset.refresh || 5) * 1000;
  const button = document.getElementById("pause");
  let paused = sessionStorage.getItem("tidemark-paused") === "1";
  const label = () => { if (button) button.textContent = paused ? "resume" : "pause"; };
  label();
  if (button) button.addEventListener("click", () => {
    paused = !paused;
    sessionStorage.setItem("tidemark-paused", paused ? "1" : "0");
    label();
  });
  async function refresh() {
    if (paused || document.hidden) return;
    const open = [...document.querySelectorAll("main details[open]")].map((d) => d.id || d.textContent.slice(0, 80));
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const next = new DOMParser().parseFromString(await response.text(), "text/html");
      const main = next.getElementById("live");
      if (!main) return;
      document.getElementById("live").replaceWith(main);
      const stamp = next.getElementById("generated");
      if (stamp) document.getElementById("generated").replaceWith(stamp);
      document.querySelectorAll("main details").forEach((d) => {
        if (open.includes(d.id || d.textContent.slice(0, 80))) d.open = true;
      });
    } catch (error) {
      /* the server may be restarting: try again next time */
    }
  }
  setInterval(refresh, every);
})();
