-- lua/providers/audnexus.lua and enrichment.parse without a database: the provider's JSON
-- as a catalog item, and its HTML summary as plain text. The fetch, the queue and the
-- merge are covered by spec/integration/enrichment_spec.lua.
local h = require("spec.support.helpers")
local audnexus = require("providers.audnexus")
local enrichment = require("enrichment")

local json = h.host.json

-- A book as api.audnex.us answers it (fields trimmed to those the mapping reads).
local BOOK = {
  asin = "B08G9PRS1K", title = "Project Hail Mary", subtitle = "A Novel",
  authors = { { asin = "B001H6UJO8", name = "Andy Weir" } },
  narrators = { { name = "Ray Porter" } },
  seriesPrimary = { asin = "B0X", name = "Bobiverse", position = "2-3" },
  runtimeLengthMin = 970, image = "https://m.media-amazon.com/images/I/91vS2L5YfEL.jpg",
  summary = "<p><b>Ryland Grace</b> is the sole survivor&hellip;</p><p>Part two.</p>",
  publisherName = "Audible Studios", releaseDate = "2021-05-04T00:00:00.000Z",
  language = "english", rating = "4.9", region = "uk",
  genres = { { asin = "1", name = "Science Fiction & Fantasy", type = "genre" },
             { asin = "2", name = "Hard Science Fiction", type = "tag" } },
}

describe("providers.audnexus.map", function()
  it("maps every field the catalog has", function()
    assert.same({
      title = "Project Hail Mary", subtitle = "A Novel", authors = { "Andy Weir" },
      narrators = { "Ray Porter" }, seriesName = "Bobiverse", seriesPosition = 2, duration = 970,
      coverImageUrl = "https://m.media-amazon.com/images/I/91vS2L5YfEL.jpg",
      summary = "Ryland Grace is the sole survivor…\n\nPart two.", publisher = "Audible Studios",
      releaseDate = "2021-05-04T00:00:00.000Z", language = "English",
      categories = { "Science Fiction & Fantasy" }, rating = 4.9, region = "uk",
    }, audnexus.map(BOOK))
  end)

  it("leaves out what the book lacks, and uses tags only when there is no genre", function()
    assert.same({ title = "T", categories = { "Tag" } },
      audnexus.map({ title = "T", authors = {}, image = "", genres = { { name = "Tag", type = "tag" } },
                     runtimeLengthMin = 0, seriesPrimary = { position = "1" } }))
  end)

  it("refuses what is not a book", function()
    assert.same({ nil, "the answer is not a JSON object" }, { audnexus.map("<html>") })
  end)

  it("builds the book URL of a region", function()
    assert.equals("http://p.example/books/B08G9PRS1K?region=de",
      audnexus.url("http://p.example/", "B08G9PRS1K", "de"))
  end)
end)

describe("providers.audnexus.plain_text", function()
  it("drops scripts, styles, comments and tags, decodes entities and keeps paragraphs", function()
    assert.equals("Hello & <world>!\n\nNext\nline ☺ «q»",
      audnexus.plain_text("<div><p>Hello &amp; &lt;world&gt;&#33;</p><SCRIPT type=x>alert(1)</script>" ..
        "<!-- hidden --><p style=\"x\">Next<br/>line &#x263A; &laquo;q&raquo;</p><style>p{}</style></div>"))
  end)

  it("drops everything after an unclosed script and decodes bad code points safely", function()
    assert.equals("a \239\191\189", audnexus.plain_text("a &#0;<script>alert(1)"))
  end)

  it("answers nil for nothing", function()
    assert.is_nil(audnexus.plain_text("<p> </p>"))
    assert.is_nil(audnexus.plain_text(nil))
  end)
end)

describe("enrichment.parse", function()
  it("validates the mapped item with the sync's rules, dropping refused values", function()
    local book = {}
    for k, v in pairs(BOOK) do book[k] = v end
    book.rating, book.image = "11", "javascript:alert(1)"
    local item = enrichment.parse(json.encode(book))
    assert.same({ nil, nil, "2021-05-04", "Project Hail Mary" },
      { item.rating, item.coverImageUrl, item.releaseDate, item.title })
  end)

  it("refuses malformed JSON and answers that are no book", function()
    assert.is_nil(enrichment.parse('{"title": "Broken'))
    assert.is_nil(enrichment.parse('"just a string"'))
  end)
end)
