//! Following the pages of `List` and `ListContext`: the daemon answers a
//! page at a time so no reply nears gRPC's 4 MiB; commands print the whole.

use ttm_proto::v1::{ListContextRequest, ListContextResponse, ListRequest, ListResponse, TxnRef};

use crate::connect::Daemon;
use crate::exit::Failure;

/// Rows asked per `List` page: ttmd's maximum (`MAX_PAGE_SIZE`).
const LIST_PAGE_SIZE: u32 = 5000;

/// The whole listing: `List` answers a page at a time (each reply well
/// under gRPC's 4 MiB), so follow `next_page_token` to the end.
pub async fn txns(daemon: &mut Daemon, first: ListRequest) -> Result<ListResponse, Failure> {
    let mut request = first;
    if request.page_size == 0 {
        // The most the daemon gives (its byte cap still bounds each reply):
        // ttmd walks every summary of the module for each page, so 100,000
        // rows cost 20 walks instead of the default size's 200.
        request.page_size = LIST_PAGE_SIZE;
    }
    let mut all = ListResponse::default();
    loop {
        let page_request = request.clone();
        let page = daemon
            .call(async move |c| c.list(page_request).await)
            .await?;
        all.txns.extend(page.txns);
        all.quarantined.extend(page.quarantined);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        if page.next_page_token == request.page_token {
            return Err(Failure::other(
                "ttmd answered List with the same page again; report this as a bug in ttmd",
            ));
        }
        request.page_token = page.next_page_token;
    }
}

/// Every ctx file: `ListContext` answers a page at a time (each reply well
/// under gRPC's 4 MiB), so follow `next_page_token` to the end.
pub async fn ctx_files(
    daemon: &mut Daemon,
    txn: Option<TxnRef>,
) -> Result<ListContextResponse, Failure> {
    let mut request = ListContextRequest {
        txn,
        ..Default::default()
    };
    let mut all = ListContextResponse::default();
    loop {
        let page_request = request.clone();
        let page = daemon
            .call(async move |c| c.list_context(page_request).await)
            .await?;
        all.files.extend(page.files);
        all.ctx_digest = page.ctx_digest;
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        if page.next_page_token == request.page_token {
            return Err(Failure::other(
                "ttmd answered ListContext with the same page again; report this as a bug in ttmd",
            ));
        }
        request.page_token = page.next_page_token;
    }
}
