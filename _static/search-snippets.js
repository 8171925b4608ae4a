// Search result snippets come from the page's article, not from the whole <main> element.
//
// Sphinx's search (searchtools.js) fetches each result page and shows the text around the first match in
// the page's [role="main"] element. The theme puts role="main" on <main>, which also holds the article's
// header buttons and a print-only table of contents, so snippets showed button labels ("Download .md .pdf
// Repository Open issue") and a list of section titles instead of the page's own text. This script keeps
// Sphinx's search and replaces only the function that extracts a page's text.
(() => {
  const NOISE = [".headerlink", "script", "style", "button", "summary", ".copybtn", ".toggle-details__summary"];

  function articleText(html, anchor) {
    const page = new DOMParser().parseFromString(html, "text/html");
    const article = page.querySelector("article.bd-article");
    if (!article) return null;
    for (const selector of NOISE) article.querySelectorAll(selector).forEach((el) => el.remove());
    let part = article;
    if (anchor) {
      try {
        part = article.querySelector(anchor) || article;
      } catch (error) {
        part = article; // an anchor that is not a valid selector: the whole article
      }
    }
    return part.textContent.replace(/\s+/g, " ").trim();
  }

  function patch() {
    if (typeof Search === "undefined" || Search.tfcourseSnippets) return;
    const sphinxText = Search.htmlToText;
    Search.htmlToText = (html, anchor) => articleText(html, anchor) ?? sphinxText(html, anchor);
    Search.tfcourseSnippets = true;
  }

  patch(); // pages that load searchtools.js before this script
  document.addEventListener("DOMContentLoaded", patch); // the search page loads it after, before this event
})();
